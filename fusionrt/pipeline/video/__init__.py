"""Video: ``io`` (probe, demux/decode, transcode set-up, frame iteration), ``loop`` (the one
bounded-queue decode → upload → compute → download → encode loop), ``encode`` (segment
encoders and muxer), ``frame_fn`` (a frame function as a frame stage), ``threads``."""
