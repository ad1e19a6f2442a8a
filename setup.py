"""The one compiled part of Vesalius; everything else about the build is in pyproject.toml.

``vesalius.dicom._rawwalk`` reads the plain elements of a stored instance's header in C (see
its source). It is optional: where it cannot be built (no C compiler), the install goes on and
``vesalius.dicom.rawscan`` reads every element in Python, with the same result.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("vesalius.dicom._rawwalk", ["src/vesalius/dicom/_rawwalk.c"], optional=True)
    ]
)
