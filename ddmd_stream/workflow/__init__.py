"""Running the four roles as tasks: plan, engines (RADICAL-EnTK, local), resources."""
