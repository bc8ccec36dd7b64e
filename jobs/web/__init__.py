"""The analyst's read-only web view (`mmkg serve`): Flask app, templates, static files.

`mmkg.jobs.web.queries` holds the store queries shared with the `mmkg entity/neighbors` commands;
importing this package does not import Flask.
"""
