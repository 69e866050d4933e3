"""Machine-learning helpers shared by sampling, training and prediction."""
