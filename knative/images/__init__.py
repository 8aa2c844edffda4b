"""The Dockerfile mlfn builds function images from (package data)."""
