"""What autoencoders are used for, measured: anomaly detection, features, denoising, artifacts, generation."""
