"""ONNX export of ECHO checkpoints (torch): graphs, embeddings, tokenizer and a manifest that
echo.runtime runs. Import echo.export.exporter for export_checkpoint; this package imports
nothing heavy itself."""
