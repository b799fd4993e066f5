"""Local stand-ins for a Kubernetes cluster: an API server emulator (apiserver) and a pod simulator (podsim)."""
