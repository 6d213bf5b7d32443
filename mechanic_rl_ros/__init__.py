"""mechanic_rl_ros: online RL fine-tuning of a diffusion visuomotor policy on a
Franka Research 3, with the learning rate chosen by the Mechanic tuner.

Sub-packages (the learning code never imports rclpy):

* ``optim``  -- Mechanic learning-rate tuner (pure torch)
* ``policy`` -- diffusion visuomotor policy (pure torch)
* ``rl``     -- online RL fine-tuning (pure torch)
* ``sim``    -- MuJoCo FR3 world, tasks, scripted experts (no ROS)
* ``nodes``  -- thin rclpy adapters, one file per node
* ``msg``    -- generated ROS 2 message classes (built by ``make setup``)
"""

__version__ = "0.1.0"
