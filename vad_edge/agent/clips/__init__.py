"""Event clips: the seconds before an event, the event and the seconds after, as an MP4 per event.

ring.py keeps a network camera's own encoded packets (H.264/H.265 over RTSP, demuxed with PyAV and never
decoded) for the last seconds and cuts a clip from them at keyframes, at the camera's resolution and frame
rate; store.py keeps the clips on the state disk within a size and an age.
"""
