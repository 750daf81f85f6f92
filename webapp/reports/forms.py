from django import forms
from django.conf import settings


class ImportForm(forms.Form):
    """The file only: it is read, checked and imported by a worker (webapp.reports.jobs), not in the request."""

    file = forms.FileField(help_text="A report's JSON, as downloaded from a ptlab experiment (Download → JSON).")

    def __init__(self, *args, too_big: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.too_big = too_big

    def clean_file(self):
        upload = self.cleaned_data["file"]
        most = settings.PTLAB_MAX_IMPORT_BYTES
        if upload.size > most:
            raise forms.ValidationError(f"The file has {upload.size} bytes: at most {most} (PTLAB_MAX_IMPORT_BYTES).")
        return upload

    def clean(self):
        if self.too_big:  # the upload handler stopped receiving it: no file reaches the form
            most = settings.PTLAB_MAX_IMPORT_BYTES
            self.errors.pop("file", None)
            raise forms.ValidationError(f"The file is larger than the limit: at most {most} bytes (PTLAB_MAX_IMPORT_BYTES).")
        return super().clean()
