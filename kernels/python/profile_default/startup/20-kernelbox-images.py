# kernelbox: Pillow integration for the python3 kernel.
#   * Image.show() never starts an external viewer (ImageShow.UnixViewer.show_file and its
#     subclasses' overrides are no-ops); it still displays the image, since it saves a temp file.
#   * Image.save(path) with a str path also displays the image (a display_data result), then saves.


def _kernelbox_patch_pillow():
    try:
        from PIL import Image, ImageShow
    except ImportError:
        return

    def _no_viewer(self, path=None, **options):
        return 1

    # Subclasses such as XDGViewer override show_file, so patch the whole UnixViewer family.
    pending = [ImageShow.UnixViewer]
    while pending:
        viewer_class = pending.pop()
        viewer_class.show_file = _no_viewer
        pending.extend(viewer_class.__subclasses__())

    original_save = Image.Image.save
    if getattr(original_save, "_kernelbox", False):
        return

    def save(self, fp, format=None, **params):
        if isinstance(fp, str):
            from IPython.display import display

            display(self)
        return original_save(self, fp, format, **params)

    save._kernelbox = True
    save.__doc__ = original_save.__doc__
    Image.Image.save = save


try:
    _kernelbox_patch_pillow()
finally:
    del _kernelbox_patch_pillow
