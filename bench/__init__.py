"""`vitrine bench ...`: each benchmark measures one promise on this machine and prints
JSON; `measure` holds what they share."""
