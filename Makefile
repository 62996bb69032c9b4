# The two commands of the README. Each sets up its own environment (tools/env.sh).
.PHONY: demo test test-fast test-slurm
demo:
	tools/demo.sh
test:
	tools/test.sh
test-fast:
	FAST=1 tools/test.sh
test-slurm:
	tools/test-slurm.sh
