# kernelbox IPython kernel configuration (installed to $KERNELBOX_HOME/ipython/profile_default/,
# picked up through IPYTHONDIR set in kernels/python3/kernel.json).
c = get_config()  # noqa: F821 (provided by IPython's config loader)

# No ANSI colour codes in tracebacks (IPython 9 spelling; "NoColor" is accepted case-insensitively).
c.InteractiveShell.colors = "nocolor"

# Never truncate long lists/dicts in text/plain.
c.PlainTextFormatter.max_seq_length = 0
