"""Input and output at the edges: DICOM images, VOIs, case files, and the writers of phantoms.

Only this subpackage touches pydicom, highdicom and SimpleITK file I/O.
"""
