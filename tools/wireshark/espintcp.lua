-- SPDX-License-Identifier: GPL-2.0
--
-- Wireshark/tshark dissector for RFC 9329 (formerly RFC 8229): IKE and ESP
-- in one TCP stream. Every message is a 16-bit Length (counting itself) and
-- then either an IKE message behind the 4-byte zero non-ESP marker, or an ESP
-- packet starting with its SPI; Length 3 with the byte 0xFF is a NAT
-- keepalive. The connecting side starts the stream with "IKETCP".
--
-- Debian 12's tshark has no such dissector (its "tcpencap" is Cisco's cTCP).
--   tshark -X lua_script:tools/wireshark/espintcp.lua -r capture.pcap
-- or copy the file to ~/.local/lib/wireshark/plugins/. The TCP ports are a
-- preference (default 4500): Edit > Preferences > Protocols > RFC9329, or
--   -o rfc9329.ports:4500,443

local p = Proto("rfc9329", "IKE and ESP over TCP (RFC 9329)")

local f_prefix = ProtoField.string("rfc9329.prefix", "Stream prefix")
local f_len = ProtoField.uint16("rfc9329.length", "Length", base.DEC)
local f_marker = ProtoField.uint32("rfc9329.non_esp_marker",
				   "Non-ESP marker", base.HEX)
local f_kind = ProtoField.string("rfc9329.type", "Message type")
p.fields = { f_prefix, f_len, f_marker, f_kind }

local e_len = ProtoExpert.new("rfc9329.bad_length", "Length below 2 (fatal)",
			      expert.group.MALFORMED, expert.severity.ERROR)
local e_short = ProtoExpert.new("rfc9329.short",
				"Message too short for a marker or an SPI",
				expert.group.MALFORMED, expert.severity.WARN)
p.experts = { e_len, e_short }

p.prefs.ports = Pref.range("TCP ports", "4500",
			   "TCP ports that carry RFC 9329 streams", 65535)

local isakmp = Dissector.get("isakmp")
local esp = Dissector.get("esp")
local tcp_port = DissectorTable.get("tcp.port")
local registered = "4500"

local function register()
	tcp_port:remove_all(p)
	tcp_port:add(p.prefs.ports, p)
	registered = tostring(p.prefs.ports)
end

function p.prefs_changed()
	if tostring(p.prefs.ports) ~= registered then
		register()
	end
end

-- One message at @off, whole; returns its length.
local function message(tvb, off, mlen, pinfo, tree)
	local t = tree:add(p, tvb(off, mlen))
	local body = mlen - 2

	t:add(f_len, tvb(off, 2))
	if body == 1 and tvb(off + 2, 1):uint() == 0xff then
		t:add(f_kind, tvb(off + 2, 1), "NAT keepalive")
		t:append_text(": NAT keepalive")
	elseif body >= 4 and tvb(off + 2, 4):uint() == 0 then
		t:add(f_marker, tvb(off + 2, 4))
		t:add(f_kind, tvb(off + 2, 4), "IKE")
		t:append_text(": IKE")
		if body > 4 then
			isakmp:call(tvb(off + 6, body - 4):tvb(), pinfo, tree)
		end
	elseif body >= 8 then
		t:add(f_kind, tvb(off + 2, 4), "ESP")
		t:append_text(": ESP")
		esp:call(tvb(off + 2, body):tvb(), pinfo, tree)
	else
		t:add_proto_expert_info(e_short)
	end
end

function p.dissector(tvb, pinfo, tree)
	local len = tvb:len()
	local off = 0

	pinfo.cols.protocol:set("RFC9329")
	while off < len do
		local left = len - off

		if left >= 6 and tvb(off, 6):string() == "IKETCP" then
			tree:add(p, tvb(off, 6)):add(f_prefix, tvb(off, 6))
			off = off + 6
		elseif left < 2 then
			pinfo.desegment_offset = off
			pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
			return len
		else
			local mlen = tvb(off, 2):uint()

			if mlen < 2 then
				local t = tree:add(p, tvb(off, 2))

				t:add(f_len, tvb(off, 2))
				t:add_proto_expert_info(e_len)
				return len
			end
			if left < mlen then
				pinfo.desegment_offset = off
				pinfo.desegment_len = mlen - left
				return len
			end
			message(tvb, off, mlen, pinfo, tree)
			off = off + mlen
		end
	end
	return off
end

register()
