"""The portal: server-rendered pages (Jinja2) with a little vanilla JavaScript."""
