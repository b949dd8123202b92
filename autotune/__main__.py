from autotune._cli import entry

entry()
