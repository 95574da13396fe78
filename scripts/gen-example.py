#!/usr/bin/env python3
"""Write chainwatch's bundled sample telemetry: examples/exchange-intrusion.jsonl.

A six-hour slice of three Windows hosts of one customer, in the flat JSON shape NXLog and WEF
collectors produce (Sysmon and Security channels), with one intrusion on the Exchange server
EXCH01: a web shell runs commands through w3wp.exe, the attacker creates an account, dumps LSASS
with comsvcs.dll, and hours later deletes the shadow copies and encrypts files.

Around it: ordinary activity, and near-misses that must not complete the chain:
  * w3wp.exe compiling with csc.exe (a worker child that is not a shell),
  * rundll32 reading LSASS with 0x1400 every 15 s (performance counters) and svchost 0x1000,
  * `net user` without /add on a workstation,
  * an administrator creating an account on the domain controller (stage 2 alone),
  * `vssadmin create shadow` on the domain controller (a shadow copy made, not deleted).
Records arrive roughly in time order with local jitter, and the account-creation record arrives
late (after the LSASS dump), as forwarded Security events do.

Deterministic: the same file every run (fixed seed). Usage: python3 scripts/gen-example.py
"""
import json
import os
import random
from datetime import datetime, timedelta, timezone

rng = random.Random(20261126)
START = datetime(2026, 11, 20, 1, 0, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=6)
SYSMON = "Microsoft-Windows-Sysmon/Operational"
EXCH = "EXCH01.contoso.local"
WS = "WS-014.contoso.local"
DC = "DC01.contoso.local"
records = []
guid_n = [0]


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def guid():
    guid_n[0] += 1
    return "{6004d249-%04x-6385-%04x-%012x}" % (guid_n[0] % 65536, rng.randrange(65536), guid_n[0])


def emit(t, host, channel, source, event_id, **data):
    rec = {"@timestamp": ts(t), "Hostname": host, "Channel": channel, "SourceName": source,
           "EventID": event_id}
    if channel == SYSMON:
        rec["UtcTime"] = t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    rec.update(data)
    records.append((t, rec))


def proc(t, host, image, cmd, parent, parent_cmd, user, pid=None, ppid=None, security=True):
    pid = pid or rng.randrange(1000, 30000)
    ppid = ppid or rng.randrange(500, 30000)
    emit(t, host, SYSMON, "Microsoft-Windows-Sysmon", 1, RuleName="-", ProcessGuid=guid(),
         ProcessId=str(pid), Image=image, FileVersion="10.0.17763.1", Description="",
         Product="Microsoft Windows Operating System", Company="Microsoft Corporation",
         OriginalFileName=os.path.basename(image.replace("\\", "/")), CommandLine=cmd,
         CurrentDirectory="C:\\Windows\\system32\\", User=user, LogonId="0x3e7",
         TerminalSessionId="0", IntegrityLevel="System",
         Hashes="SHA256=%064X" % rng.getrandbits(256), ParentProcessGuid=guid(),
         ParentProcessId=str(ppid), ParentImage=parent, ParentCommandLine=parent_cmd)
    if security:
        domain, name = user.split("\\", 1) if "\\" in user else ("CONTOSO", user)
        emit(t + timedelta(milliseconds=rng.randrange(1, 40)), host, "Security",
             "Microsoft-Windows-Security-Auditing", 4688, SubjectUserSid="S-1-5-18",
             SubjectUserName=name, SubjectDomainName=domain, SubjectLogonId="0x3e7",
             NewProcessId=hex(pid), NewProcessName=image, TokenElevationType="%%1936",
             ProcessId=hex(ppid), CommandLine=cmd, TargetUserSid="S-1-0-0", TargetUserName="-",
             TargetDomainName="-", TargetLogonId="0x0", ParentProcessName=parent,
             MandatoryLabel="S-1-16-16384")


def lsass(t, host, source_image, access, user="NT AUTHORITY\\SYSTEM"):
    emit(t, host, SYSMON, "Microsoft-Windows-Sysmon", 10, RuleName="-",
         SourceProcessGUID=guid(), SourceProcessId=str(rng.randrange(500, 30000)),
         SourceThreadId=str(rng.randrange(500, 30000)), SourceImage=source_image,
         TargetProcessGUID="{6004d249-fd90-604c-0c00-000000000900}", TargetProcessId="704",
         TargetImage="C:\\Windows\\system32\\lsass.exe", GrantedAccess=access,
         CallTrace="C:\\Windows\\SYSTEM32\\ntdll.dll+9c584|C:\\Windows\\System32\\KERNELBASE.dll+305fe",
         SourceUser=user, TargetUser="NT AUTHORITY\\SYSTEM")


def file_create(t, host, image, path, user="NT AUTHORITY\\SYSTEM"):
    emit(t, host, SYSMON, "Microsoft-Windows-Sysmon", 11, RuleName="-", ProcessGuid=guid(),
         ProcessId=str(rng.randrange(500, 30000)), Image=image, TargetFilename=path,
         CreationUtcTime=t.strftime("%Y-%m-%d %H:%M:%S.000"), User=user)


def account_created(t, host, name, by, by_domain):
    emit(t, host, "Security", "Microsoft-Windows-Security-Auditing", 4720,
         TargetUserName=name, TargetDomainName=host.split(".")[0].upper(),
         TargetSid="S-1-5-21-1969843730-2406867588-1543852148-%d" % rng.randrange(1000, 2000),
         SubjectUserSid="S-1-5-18", SubjectUserName=by, SubjectDomainName=by_domain,
         SubjectLogonId="0x3e7", SamAccountName=name, DisplayName="%%1793",
         UserPrincipalName="-", PrimaryGroupId="513", OldUacValue="0x0", NewUacValue="0x15")


def logon(t, host, user, ip):
    emit(t, host, "Security", "Microsoft-Windows-Security-Auditing", 4624,
         SubjectUserSid="S-1-0-0", SubjectUserName="-", SubjectDomainName="-",
         TargetUserName=user, TargetDomainName="CONTOSO", LogonType="3",
         LogonProcessName="Kerberos", AuthenticationPackageName="Kerberos",
         IpAddress=ip, IpPort=str(rng.randrange(49152, 65535)), ProcessName="-")


def network(t, host, image, dst, port):
    emit(t, host, SYSMON, "Microsoft-Windows-Sysmon", 3, RuleName="-", ProcessGuid=guid(),
         ProcessId=str(rng.randrange(500, 30000)), Image=image, User="NT AUTHORITY\\SYSTEM",
         Protocol="tcp", Initiated="true", SourceIsIpv6="false", SourceIp="10.0.1.20",
         SourcePort=str(rng.randrange(49152, 65535)), DestinationIsIpv6="false",
         DestinationIp=dst, DestinationPort=str(port))


# --------------------------------------------------------------------------- background noise
SYS = "NT AUTHORITY\\SYSTEM"
W3WP = "C:\\Windows\\System32\\inetsrv\\w3wp.exe"
W3WP_CMD = "c:\\windows\\system32\\inetsrv\\w3wp.exe -ap \"MSExchangeOWAAppPool\" -v \"v4.0\" -c \"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\bin\\GenericAppPoolConfigWithGCServerEnabledFalse.config\""
benign = [
    ("C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", "C:\\Windows\\System32\\services.exe", "C:\\Windows\\system32\\services.exe"),
    ("C:\\Windows\\System32\\conhost.exe", "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1", "C:\\Windows\\System32\\svchost.exe", "svchost.exe -k netsvcs"),
    ("C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe -RegisterDevice -ProtectionStateChanged", "C:\\Windows\\System32\\svchost.exe", "svchost.exe -k netsvcs"),
    ("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.2205.7-0\\MpCmdRun.exe", "\"MpCmdRun.exe\" -SignaturesUpdateService -ScheduleJob -RestrictPrivileges", "C:\\Windows\\System32\\svchost.exe", "svchost.exe -k netsvcs"),
    ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", "C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p"),
]
exch_benign = [
    ("C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMWorker.exe", "\"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMWorker.exe\" -pipe:2716", "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeHMHost.exe", "\"MSExchangeHMHost.exe\""),
    ("C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe", "\"C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe\" /noconfig /fullpaths @\"C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\Temporary ASP.NET Files\\owa\\a1b2c3\\x.cmdline\"", W3WP, W3WP_CMD),
]



def web_only_on_exch(host, image):
    # Only the Exchange server runs IIS: the other hosts' role inference must not see w3wp.exe.
    # (Chosen after the random draw, so the draws and every other record stay as they were.)
    return image if host == EXCH or image != W3WP else "C:\\Windows\\System32\\svchost.exe"


t = START
while t < END:
    host = rng.choice([EXCH, EXCH, WS, DC])
    kind = rng.random()
    if kind < 0.35:
        img, cmd, par, pcmd = rng.choice(benign + (exch_benign if host == EXCH else []))
        proc(t, host, img, cmd, par, pcmd, SYS, security=rng.random() < 0.5)
    elif kind < 0.55:
        network(t, host, web_only_on_exch(host, rng.choice(["C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\System32\\lsass.exe", W3WP])),
                rng.choice(["10.0.1.10", "10.0.1.11", "52.96.88.130"]), rng.choice([443, 88, 389, 445]))
    elif kind < 0.75:
        logon(t, host, rng.choice(["EXCH01$", "svc_backup", "HealthMailbox3a1b", "jdoe"]),
              rng.choice(["10.0.1.10", "10.0.1.31", "127.0.0.1"]))
    elif kind < 0.9:
        file_create(t, host, web_only_on_exch(host, rng.choice(["C:\\Windows\\System32\\svchost.exe", W3WP])),
                    rng.choice(["C:\\Windows\\Temp\\MpCmdRun.log",
                                "C:\\inetpub\\logs\\LogFiles\\W3SVC1\\u_ex261120.log",
                                "C:\\Windows\\Prefetch\\CONHOST.EXE-1F3E9D7E.pf"]))
    else:
        lsass(t, host, "C:\\Windows\\system32\\svchost.exe", rng.choice(["0x1000", "0x3000"]))
    t += timedelta(milliseconds=rng.randrange(2000, 14000))

# rundll32 loading performance counters reads LSASS with 0x1400 every 15 s on the Exchange server.
t = START
while t < END:
    lsass(t, EXCH, "C:\\Windows\\system32\\rundll32.exe", "0x1400")
    t += timedelta(seconds=15)

# --------------------------------------------------------------------------- near-misses
proc(START + timedelta(minutes=47), WS, "C:\\Windows\\System32\\net.exe", "net user jdoe /domain",
     "C:\\Windows\\System32\\cmd.exe", "\"C:\\Windows\\system32\\cmd.exe\"", "CONTOSO\\helpdesk")
account_created(START + timedelta(hours=1, minutes=5), DC, "a.nguyen", "admin.kim", "CONTOSO")
proc(START + timedelta(hours=3, minutes=30), DC, "C:\\Windows\\System32\\vssadmin.exe",
     "vssadmin create shadow /for=C:", "C:\\Windows\\System32\\cmd.exe",
     "\"C:\\Windows\\system32\\cmd.exe\"", "CONTOSO\\admin.kim")

# --------------------------------------------------------------------------- the intrusion
CMD = "C:\\Windows\\System32\\cmd.exe"
SHELL_USER = "NT AUTHORITY\\SYSTEM"
t0 = START + timedelta(hours=1, minutes=14, seconds=7, milliseconds=120)
proc(t0, EXCH, CMD, "cmd /c whoami", W3WP, W3WP_CMD, SHELL_USER, pid=23400, ppid=10844)
proc(t0 + timedelta(milliseconds=380), EXCH, "C:\\Windows\\System32\\whoami.exe", "whoami", CMD, "cmd /c whoami", SHELL_USER, ppid=23400)
file_create(t0 - timedelta(minutes=3), EXCH, "System", "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\FrontEnd\\HttpProxy\\owa\\auth\\errorEE.aspx")

t1 = t0 + timedelta(minutes=2, seconds=34)
proc(t1, EXCH, CMD, "cmd /c net user svc_sync Sup3rS3cret! /add", W3WP, W3WP_CMD, SHELL_USER, pid=23512, ppid=10844)
proc(t1 + timedelta(milliseconds=90), EXCH, "C:\\Windows\\System32\\net.exe", "net user svc_sync Sup3rS3cret! /add", CMD, "cmd /c net user svc_sync Sup3rS3cret! /add", SHELL_USER, pid=23520, ppid=23512)
proc(t1 + timedelta(milliseconds=160), EXCH, "C:\\Windows\\System32\\net1.exe", "C:\\Windows\\system32\\net1 user svc_sync Sup3rS3cret! /add", "C:\\Windows\\System32\\net.exe", "net user svc_sync Sup3rS3cret! /add", SHELL_USER, ppid=23520)
account_created(t1 + timedelta(milliseconds=700), EXCH, "svc_sync", "EXCH01$", "CONTOSO")
proc(t1 + timedelta(seconds=22), EXCH, CMD, "cmd /c net localgroup administrators svc_sync /add", W3WP, W3WP_CMD, SHELL_USER)

t2 = t0 + timedelta(minutes=27, seconds=5)
proc(t2, EXCH, "C:\\Windows\\System32\\rundll32.exe",
     "C:\\Windows\\System32\\rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 704 C:\\Windows\\Temp\\perf.dmp full",
     CMD, "cmd /c rundll32 comsvcs.dll MiniDump", SHELL_USER)
lsass(t2 + timedelta(milliseconds=610), EXCH, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF")
file_create(t2 + timedelta(seconds=1, milliseconds=200), EXCH, "C:\\Windows\\System32\\rundll32.exe", "C:\\Windows\\Temp\\perf.dmp")

t3 = t0 + timedelta(hours=2, minutes=49, seconds=48)
ATTACKER = "EXCH01\\svc_sync"
proc(t3, EXCH, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", CMD, "cmd.exe /c vssadmin.exe delete shadows /all /quiet", ATTACKER)
proc(t3 + timedelta(seconds=15), EXCH, "C:\\Windows\\System32\\wbadmin.exe", "wbadmin delete catalog -quiet", CMD, "cmd.exe /c wbadmin delete catalog -quiet", ATTACKER)
for i in range(40):
    file_create(t3 + timedelta(seconds=40 + i * 2), EXCH, "C:\\Users\\Public\\svchosts.exe",
                f"C:\\ExchangeData\\Exports\\mailbox-{i:03d}.pst.lockd", ATTACKER)
file_create(t3 + timedelta(seconds=125), EXCH, "C:\\Users\\Public\\svchosts.exe", "C:\\Users\\Public\\Desktop\\README-RECOVER.txt", ATTACKER)

# --------------------------------------------------------------------------- arrival order
records.sort(key=lambda r: r[0])
ordered = [r[1] for r in records]
# Local jitter: forwarders batch and reorder within seconds.
for i in range(0, len(ordered) - 1, 7):
    if rng.random() < 0.5:
        ordered[i], ordered[i + 1] = ordered[i + 1], ordered[i]
# The Security event for the new account reaches the collector late, after the dump.
late = next(r for r in ordered if r["EventID"] == 4720 and r.get("TargetUserName") == "svc_sync")
ordered.remove(late)
dump = next(i for i, r in enumerate(ordered) if r.get("GrantedAccess") == "0x1FFFFF")
ordered.insert(dump + 3, late)

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "examples", "exchange-intrusion.jsonl")
with open(out, "w", encoding="utf-8", newline="\n") as f:
    for r in ordered:
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
print(f"wrote {len(ordered)} records to {os.path.relpath(out)}")
