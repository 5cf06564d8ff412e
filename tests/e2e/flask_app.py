"""A real Flask app with real Flask-Session (Redis backend), for the end-to-end test.

Usage: python3 flask_app.py HTTP_PORT REDIS_PORT KEY_PREFIX
Two of these run with different key prefixes against one rekey; a login on one must be seen by
the other with the same cookie.
"""
import sys

import redis
from flask import Flask, request, session
from flask_session import Session

http_port, redis_port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

app = Flask(__name__)
app.config.update(
    SECRET_KEY="shared-secret-for-both-apps",
    SESSION_TYPE="redis",
    SESSION_REDIS=redis.Redis(host="127.0.0.1", port=redis_port),
    SESSION_KEY_PREFIX=prefix,
    SESSION_PERMANENT=True,
)
Session(app)


@app.route("/login")
def login():
    session["user"] = request.args["user"]
    return "logged in as " + session["user"]


@app.route("/whoami")
def whoami():
    return session.get("user", "anonymous")


@app.route("/logout")
def logout():
    session.clear()
    return "bye"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=http_port)
