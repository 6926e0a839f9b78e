"""``dranspose.data.pcap``: PandABox PCAP over ZMQ message models."""

from tango_dranspose.streams.pcap import PCAPData, PCAPEnd, PCAPPacket, PCAPPacketType, PCAPStart

__all__ = ["PCAPData", "PCAPEnd", "PCAPPacket", "PCAPPacketType", "PCAPStart"]
