"""The ``mechanic-rl`` command-line jobs: ``collect`` (demonstrations),
``pretrain`` (diffusion policy), ``eval`` (success rate in simulation) and
``train-rl`` (headless online RL). Each exposes ``main(argv)``; every rollout
goes through :mod:`mechanic_rl_ros.control.chunk_loop`."""
