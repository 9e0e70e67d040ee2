"""Exit codes of every sub-command."""

#: 0 success; 1 a result without an L1–L4 value (or, for batch commands, at least one
#: failed input); 2 an error (bad input, ROI, settings).
EXIT_OK, EXIT_INCOMPLETE, EXIT_ERROR = 0, 1, 2
