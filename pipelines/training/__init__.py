"""Training: collection, trainers, evaluation and the collect-train-evaluate loop of one run."""
