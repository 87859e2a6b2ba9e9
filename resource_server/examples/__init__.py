"""Example firmware built on the resource-server library (:mod:`resource_server.examples.door_lock`)."""
