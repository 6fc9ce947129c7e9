from distune.cli import entry

entry()
