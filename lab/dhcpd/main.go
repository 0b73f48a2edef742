// Command bml-dhcpd is the lab's stand-in for virt-launcher's DHCP server of a bridge-bound
// interface. It is test infrastructure, written for this project from the facts recorded in
// docs/kubevirt-facts.md (rows D1 to D4): it uses the packet library virt-launcher uses
// (github.com/krolaw/dhcp4, the version KubeVirt v1.5 to v1.9 pin), so offers and acks look on
// the wire like the real ones, and it answers the way virt-launcher's server does:
//
//   - one client MAC; a packet with any other chaddr gets no answer at all;
//   - DISCOVER gets an OFFER, every REQUEST gets an ACK, both for the pod's address, whatever
//     address the client asked for; no NAK, ever; every other message type is ignored;
//   - a 999-day lease, the server identifier 169.254.75.1<index>, and the options subnet mask,
//     router, DNS servers, interface MTU, classless routes, host name and search domains;
//   - replies go to 255.255.255.255 when the request came from 0.0.0.0 or asked for broadcast,
//     else back to the sender, always out of the bridge the request came in on.
//
// Every decision is one line on stderr, which the lab keeps as the pod's dhcpd.log.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	dhcp "github.com/krolaw/dhcp4"
	dhcpconn "github.com/krolaw/dhcp4/conn"
	"golang.org/x/net/ipv4"
)

const leaseDuration = 999 * 24 * time.Hour

type routeFlags []string

func (r *routeFlags) String() string     { return strings.Join(*r, " ") }
func (r *routeFlags) Set(v string) error { *r = append(*r, v); return nil }

type handler struct {
	clientMAC net.HardwareAddr
	clientIP  net.IP
	serverIP  net.IP
	options   dhcp.Options
}

func (h *handler) ServeDHCP(p dhcp.Packet, msgType dhcp.MessageType, opts dhcp.Options) dhcp.Packet {
	mac := p.CHAddr()
	if !bytes.Equal(mac, h.clientMAC) {
		log.Printf("ignored %s from %s: not the client (%s)", msgType, mac, h.clientMAC)
		return nil
	}
	switch msgType {
	case dhcp.Discover:
		log.Printf("DISCOVER from %s -> OFFER %s", mac, h.clientIP)
		return dhcp.ReplyPacket(p, dhcp.Offer, h.serverIP, h.clientIP, leaseDuration, h.options.SelectOrderOrAll(nil))
	case dhcp.Request:
		asked := net.IP(opts[dhcp.OptionRequestedIPAddress])
		if len(asked) == 0 {
			asked = p.CIAddr()
		}
		log.Printf("REQUEST from %s for %s -> ACK %s", mac, asked, h.clientIP)
		return dhcp.ReplyPacket(p, dhcp.ACK, h.serverIP, h.clientIP, leaseDuration, h.options.SelectOrderOrAll(nil))
	default:
		log.Printf("ignored %s from %s: not a DISCOVER or REQUEST", msgType, mac)
		return nil
	}
}

// classlessRoutes encodes option 121 (RFC 3442): width, the significant octets of the
// destination, the gateway; the default route last.
func classlessRoutes(routes []string) ([]byte, error) {
	var out, last []byte
	for _, r := range routes {
		dst, gw, ok := strings.Cut(r, ",")
		if !ok {
			return nil, fmt.Errorf("route %q: want <cidr>,<gateway>", r)
		}
		_, ipnet, err := net.ParseCIDR(dst)
		if err != nil {
			return nil, fmt.Errorf("route %q: %v", r, err)
		}
		gateway := net.ParseIP(gw).To4()
		if gateway == nil {
			return nil, fmt.Errorf("route %q: gateway is not IPv4", r)
		}
		width, _ := ipnet.Mask.Size()
		entry := append([]byte{byte(width)}, ipnet.IP.To4()[:(width+7)/8]...)
		entry = append(entry, gateway...)
		if width == 0 {
			last = append(last, entry...)
		} else {
			out = append(out, entry...)
		}
	}
	return append(out, last...), nil
}

// searchList encodes option 119 (RFC 3397) without compression.
func searchList(domains []string) []byte {
	var out []byte
	for _, d := range domains {
		for _, label := range strings.Split(d, ".") {
			out = append(out, byte(len(label)))
			out = append(out, label...)
		}
		out = append(out, 0)
	}
	return out
}

func main() {
	log.SetFlags(log.Ldate | log.Ltime | log.Lmicroseconds)
	iface := flag.String("iface", "k6t-eth0", "the bridge to serve on")
	clientMAC := flag.String("client-mac", "", "the one MAC to answer")
	clientCIDR := flag.String("client-ip", "", "the pod's address, <ip>/<prefix>")
	router := flag.String("router", "", "the gateway")
	serverIP := flag.String("server-ip", "169.254.75.10", "the server identifier")
	mtu := flag.Int("mtu", 1500, "the interface MTU option")
	dns := flag.String("dns", "", "comma-separated DNS servers")
	search := flag.String("search", "", "comma-separated search domains")
	hostname := flag.String("hostname", "", "the host name option (virt-launcher sends the pod's)")
	var routes routeFlags
	flag.Var(&routes, "route", "a classless route <cidr>,<gateway> (repeatable)")
	flag.Parse()

	mac, err := net.ParseMAC(*clientMAC)
	if err != nil {
		log.Fatalf("-client-mac: %v", err)
	}
	ip, ipnet, err := net.ParseCIDR(*clientCIDR)
	if err != nil {
		log.Fatalf("-client-ip: %v", err)
	}
	mtuBytes := make([]byte, 2)
	binary.BigEndian.PutUint16(mtuBytes, uint16(*mtu))
	var dnsBytes []byte
	for _, s := range strings.Split(*dns, ",") {
		if a := net.ParseIP(strings.TrimSpace(s)).To4(); a != nil {
			dnsBytes = append(dnsBytes, a...)
		}
	}
	options := dhcp.Options{
		dhcp.OptionSubnetMask:       []byte(ipnet.Mask),
		dhcp.OptionDomainNameServer: dnsBytes,
		dhcp.OptionInterfaceMTU:     mtuBytes,
	}
	if gw := net.ParseIP(*router).To4(); gw != nil {
		options[dhcp.OptionRouter] = gw
	}
	if cr, err := classlessRoutes(routes); err != nil {
		log.Fatal(err)
	} else if len(cr) > 0 {
		options[dhcp.OptionClasslessRouteFormat] = cr
	}
	if *search != "" {
		domains := strings.Split(*search, ",")
		options[dhcp.OptionDomainSearch] = searchList(domains)
		options[dhcp.OptionDomainName] = []byte(domains[0])
	}
	name := *hostname
	if name == "" {
		name, _ = os.Hostname()
	}
	options[dhcp.OptionHostName] = []byte(name)

	link, err := net.InterfaceByName(*iface)
	if err != nil {
		log.Fatalf("-iface: %v", err)
	}
	// One server per bridge, all on :67 in the same pod: SO_REUSEADDR lets them share the port,
	// and the interface filter below gives each one only its own bridge's packets.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var opErr error
		if err := c.Control(func(fd uintptr) {
			opErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return opErr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", ":67")
	if err != nil {
		log.Fatal(err)
	}
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		log.Fatal(err)
	}
	h := &handler{clientMAC: mac, clientIP: ip.To4(), serverIP: net.ParseIP(*serverIP).To4(), options: options}
	log.Printf("serving %s on %s: %s as %s, server %s", mac, *iface, ip, *clientCIDR, *serverIP)
	log.Fatal(dhcp.Serve(dhcpconn.NewServeIf(link.Index, p), h))
}
