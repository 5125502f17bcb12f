"""``medcap serve``: the Gradio web app (server.py) over medcap.inference.pipeline.Pipeline."""
