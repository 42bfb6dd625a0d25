"""The widgets' Qt-free side: layers to arrays, results to layers, the per-viewer session, job inputs.

Nothing here imports Qt (an import-linter contract checks it), so it is tested without a
window where possible.
"""
