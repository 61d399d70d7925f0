"""Batch jobs on Ray: many images and videos, many workers, many machines.

``jobs`` plans (inputs, outputs, resumability, report), ``segments`` splits long videos at
keyframes and stitches them back, ``workers`` is the warm Ray actor, ``runner`` drives the job,
``commands`` adds ``fusionrt batch``. Ray (the ``ray`` extra) is imported only when a job runs.
"""
