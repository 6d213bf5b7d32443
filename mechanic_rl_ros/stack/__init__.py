"""The node stack as data: one description of which nodes run with which
parameters, read by both ``launch/finetune.launch.py`` (ros2 launch) and the
venv runner ``mechanic-rl finetune`` -- never two hand-kept copies."""
