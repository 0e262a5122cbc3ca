"""Benchmarks: `carla-seg bench model|node|cameras|gpu|transport|soak|fuzz|record`, each printing its figures against a baseline measured in the same run."""
