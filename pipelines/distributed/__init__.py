"""Distributed collection: the server, actor, learner and evaluator roles around Reverb."""
