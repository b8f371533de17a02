"""File formats: MRC volumes, particle lists (SHREC txt, RELION STAR, CSV) and dataset folders.

Files speak x, y, z; arrays inside are (z, y, x): the flip happens here and nowhere else.
"""
