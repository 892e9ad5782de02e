"""A trained run used outside aelab: predictions on new inputs, exports for other runtimes."""
