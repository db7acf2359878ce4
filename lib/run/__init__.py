"""What run_all needs besides the stages: pre-flight, the run lock, the run records, the notebook runner."""
