"""Robot-side logic that needs no ROS: FR3 limits, the safety filter, observation
assembly, the one act-observe-replan loop, episode bookkeeping and the
learner's (episode, step) join. Nodes and headless jobs drive these objects;
this package imports only numpy (and the standard library)."""
