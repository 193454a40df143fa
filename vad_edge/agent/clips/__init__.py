"""Event clips: the seconds before an event, the event and the seconds after, as an MP4 per event.

packets.py keeps a network camera's own encoded packets (H.264/H.265 over RTSP, demuxed with PyAV and never
decoded) and cuts clips from them at keyframes, at the camera's resolution and frame rate; frames.py encodes
clips of other sources from the frames the agent already has; recorder.py decides which event gets which clip
and when its end may go out; store.py keeps the clips on the state disk within a size and an age.
"""
