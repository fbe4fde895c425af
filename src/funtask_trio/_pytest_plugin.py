"""pytest plugin (entry point ``funtask_trio``): fixtures for testing tasks and servers."""
