"""The web page (`hesp-app`, a Space's `app.py`): `analysis` computes what one request shows, `page` lays it out
with Gradio and runs the queue. Needs the `app` extra (Gradio); the rest of the package never imports this room."""
