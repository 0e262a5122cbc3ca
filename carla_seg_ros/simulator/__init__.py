"""The CARLA simulator client: `carla-seg carla` drives a CARLA 0.9.16 server, publishes its cameras like the bridge and records datasets."""
