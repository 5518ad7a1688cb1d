"""tfa-pipelines: gin-configured collect-train-evaluate experiments on TF-Agents."""
