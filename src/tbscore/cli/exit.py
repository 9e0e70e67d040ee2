"""Exit codes of every sub-command."""

#: 0 success; 1 a result without an L1–L4 value (or, for batch commands, at least one
#: failed input); 2 an error (bad input, ROI, settings).
EXIT_OK, EXIT_INCOMPLETE, EXIT_ERROR = 0, 1, 2
#: ``tbscore batch``: no input was scored (no DICOM found, or every input failed).
EXIT_NOTHING_SCORED = 3
#: Stopped by SIGTERM (128 + 15), like Ctrl-C (130): the rows written are kept.
EXIT_TERMINATED = 143
