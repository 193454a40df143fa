"""What scores on a box: where and in which format (hardware), the networks run by torch or an exported graph
(graph, runners), the Scorer that returns the score the box ships (scorer), scoring whole videos (batch), and a
camera's bundle of model, threshold and provenance (bundle).

Everything that scores goes through here: the agent, eval, calibrate, the demo, training's fusion fit and the
benchmarks, so a threshold is fitted in the precision and runtime the box scores in. Above the model (which
imports nothing from here), below the commands. Importing this package imports no torch: `vad-edge info`
answers at once.
"""
