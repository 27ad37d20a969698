"""The D-Bus edge: the service, polkit, who may do what, the Supervisor of runs."""
