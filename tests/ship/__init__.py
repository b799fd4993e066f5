"""Tests of what ships: the image's Dockerfile, the Helm chart, the Argo CD pieces."""
