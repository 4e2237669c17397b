"""The user-facing layer: the ``lookalike`` command line (:mod:`.cli`) and the Gradio web app (:mod:`.ui`).

Nothing in the core packages (data, embedder, index) imports from here.
"""
