"""What a run tells people: the collated tables, report.html and its charts, Slack messages."""
