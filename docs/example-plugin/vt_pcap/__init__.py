"""vt plugin example: copy every tunnelled packet to a pcap file (``pcap "FILE";``)."""

from vt_pcap.module import PcapModule
from vt_pcap.pcapfile import PcapError, PcapSummary, summarize

__all__ = ["PcapError", "PcapModule", "PcapSummary", "summarize"]
__version__ = "0.1.0"
