"""A small real Flask app: routes, forms, JSON, uploads, streaming, errors."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask"


@app.post("/form")
def form():
    return jsonify(name=request.form["name"], files=sorted(request.files),
                   size=len(request.files["f"].read()) if "f" in request.files else 0)


@app.post("/json")
def json_echo():
    return jsonify(request.get_json())


@app.get("/stream")
def stream():
    return Response((f"line {i}\n" for i in range(3)), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")
