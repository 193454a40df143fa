"""A real RTSP camera for the tests and benchmarks: GStreamer's RTSP server streaming frames as H.264 or H.265.

Runs under the system Python (/usr/bin/python3), which has GStreamer's bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0; x264enc from gstreamer1.0-plugins-ugly, x265enc from -bad), as its own process
on a loopback port:

    rtsp_server.py --port P --frames RAW --size WxH [--fps 10] [--user U --password PW]
                   [--protocols tcp|udp|any] [--loop] [--stall-after N] [--stamp LOG]
                   [--codec h264|h265] [--encode-size WxH]

RAW holds the frames as packed BGR bytes, one after the other; each session plays them from the first, in
real time at `fps`, once (then the stream ends) or on a --loop, on rtsp://[U:PW@]127.0.0.1:P/cam.
--stall-after N stops sending after N frames and keeps the session open (a hung camera). --stamp writes
each frame's number into its top rows as 16 black or white blocks and a line "number wall-time" to LOG as
the frame is sent: a reader gets the frame's age back from its pixels.
Prints "ready" when it listens.
"""

import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

STAMP_BITS, STAMP_BLOCK = 16, 12  # 16 bits of 12x12 pixels: 192 pixels wide, survives the encoder


def stamp(frame: bytes, number: int, width: int) -> bytes:
    rows = bytearray(frame)
    for bit in range(STAMP_BITS):
        value = 255 if number >> bit & 1 else 0
        for y in range(STAMP_BLOCK):
            start = (y * width + bit * STAMP_BLOCK) * 3
            rows[start:start + 3 * STAMP_BLOCK] = bytes([value]) * (3 * STAMP_BLOCK)
    return bytes(rows)


class Camera:
    """Pushes the frames into one client's pipeline at the frame rate, from a GLib timer."""

    def __init__(self, args, frames: list[bytes], width: int):
        self.args, self.frames, self.width = args, frames, width
        self.log = open(args.stamp, "a", buffering=1) if args.stamp else None

    def configure(self, factory, media):
        source = media.get_element().get_child_by_name("src")
        state = {"sent": 0}

        def push():
            if self.args.stall_after is not None and state["sent"] >= self.args.stall_after:
                return True  # a hung camera: the session stays open, nothing more comes
            number = state["sent"]
            if number == len(self.frames) and not self.args.loop:
                source.emit("end-of-stream")  # the stream ends; the session closes
                return False
            data = self.frames[number % len(self.frames)]
            if self.log:
                data = stamp(data, number, self.width)
            buffer = Gst.Buffer.new_wrapped(data)
            if source.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
                return False  # the client went away
            if self.log:
                self.log.write(f"{number} {time.time():.6f}\n")
            state["sent"] += 1
            return True

        GLib.timeout_add(int(1000 / self.args.fps), push)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", required=True)
    parser.add_argument("--size", required=True)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--protocols", choices=("tcp", "udp", "any"), default="any")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--stall-after", type=int)
    parser.add_argument("--stamp")
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    parser.add_argument("--encode-size", help="WxH the stream is scaled to (a camera's main stream), default --size")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    raw = open(args.frames, "rb").read()
    size = width * height * 3
    frames = [raw[i:i + size] for i in range(0, len(raw) - size + 1, size)]

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    rate = f"{int(args.fps)}/1"
    scale = "! videoscale ! video/x-raw,format=I420,width={},height={}".format(*args.encode_size.split("x")) \
        if args.encode_size else "! video/x-raw,format=I420"
    # A keyframe a second, as cameras are advised to send; parameter sets with every keyframe.
    encode = {"h264": f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={int(args.fps)} quantizer=18 "
                      f"pass=quant ! rtph264pay name=pay0 pt=96 config-interval=1",
              "h265": f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={int(args.fps)} qp=22 "
                      f"! rtph265pay name=pay0 pt=96 config-interval=1"}[args.codec]
    factory.set_launch(
        f"( appsrc name=src is-live=true do-timestamp=true format=time "
        f"caps=video/x-raw,format=BGR,width={width},height={height},framerate={rate} "
        f"! videoconvert {scale} ! {encode} )")
    protocols = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
                 "any": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP}
    factory.set_protocols(protocols[args.protocols])
    factory.connect("media-configure", Camera(args, frames, width).configure)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
