"""Clinical logic without I/O: fracture-risk threshold sets, TBS-adjusted FRAX,
interpretation of a result, CPT coding and dated fee schedules."""
