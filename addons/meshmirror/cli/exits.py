"""The command's exit codes: 0 fine; 1 configuration errors, findings at or above the failure
threshold, or a verdict's condition that holds (explain of a request that matches nothing is
still 0); 2 usage errors, unreadable paths, too few samples."""

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
