"""The web console served by the control plane at /ui/ (issue 19): its static files, sessions and
live stream.

`routes` serves the browser's files from `static/` and the sign-in and stream endpoints; `sessions`
turns an API token or a one-time login link into an HttpOnly cookie with a CSRF secret; `events`
fans the controller's events, passes and node changes out to every open stream. The API routes the
console reads are the API's own (reconciler/api), which accept the session cookie too.
"""
