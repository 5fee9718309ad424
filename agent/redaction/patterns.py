"""Shared value readers and the triggers of the rules for tools' command lines, credential files and configs.

A rule is a short *trigger* (a label and separator, a tool's flag, a file's line shape) followed by a *value* read by
one of a few shared readers, so that where a value ends is decided in one place for every rule:

* :data:`VALUE`: a double- or single-quoted string (backslash escapes inside), an opening quote never closed on the
  line, or a bare word running to whitespace, a quote or ``</`` (``;``, ``,``, ``&``, ``<`` and ``>`` are part of a
  password: ``password=P@ss;word123`` is masked whole);
* :data:`QUOTED`: only the quoted forms (SQL's ``PASSWORD 'x'``);
* :data:`TO_LINE_END`: the rest of the line (a header whose whole value is a credential).

Where a trigger alone says too little (``-p`` is a password to ``mysql`` and a port to ``ssh``), the handler
confirms it from what comes before on the same line or record, at most :data:`LOOKBEHIND` bytes back
(:data:`FLAG_TOOLS`, :data:`NAME_FIELD`): a stream keeps that much of what it released as context, so the decision is
the same whatever the chunking.

Every repeat is bounded (:data:`~agent.redaction.rules.MAX_VALUE`), as the rules' exactness needs.
"""

from __future__ import annotations

import re

#: The most bytes before a candidate a handler may read to confirm it (a stream keeps this much as context).
LOOKBEHIND = 256
#: How far back a key body line looks for the BEGIN line of a certificate or public key (which stays as it is).
BLOCK_LOOKBEHIND = 4096
V = 1000  # MAX_VALUE (rules imports this module, so the number is repeated here and checked there)

# -- value readers -----------------------------------------------------------------------------------------------

_DQ = rb'"(?:[^"\\\r\n]|\\[^\r\n]){1,%d}"' % V
_SQ = rb"[NnEe]?'(?:[^'\\\r\n]|\\[^\r\n]|''){1,%d}'" % V
_OPEN = rb"[\"'][^ \t\r\n\"']{1,%d}" % V
_BARE = rb"(?:[^ \t\r\n\"'<]|<[^/ \t\r\n\"'<]){1,%d}" % V
QUOTED = rb"(?:" + _DQ + rb"|" + _SQ + rb")"
VALUE = rb"(?:" + _DQ + rb"|" + _SQ + rb"|" + _OPEN + rb"|" + _BARE + rb")"
TO_LINE_END = rb"[^\r\n]{1,%d}" % V
#: Inside a bare value, where the next ``name=`` pair of a query or connection string starts: the value ends there.
NEXT_PAIR = re.compile(rb"[;&,][A-Za-z_][A-Za-z0-9_.\[\]-]{0,64}=")

#: A label that names a credential (searched in a name field, :data:`NAME_FIELD`).
CREDENTIAL_NAME = re.compile(
    rb"(?i:passw(?:or)?d|passphrase|_pass\b|^pass$|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    rb"|credential|accountkey|connection[_-]?string)"
)
#: A label's part that names a setting about a credential, not the credential (``password_policy=strict``,
#: ``PasswordAuthentication no``, ``token_type``, ``password_min_length``).
SETTING_WORD = re.compile(
    rb"(?i:polic|length|_min|_max|minimum|maximum|expir|_age|history|complex|authenticat|reuse|lifetime|retr(?:y|ies)"
    rb"|attempt|_lock|prompt|change|required|strength|_rule|reset|_count|_days|_warn|inactive|hint|algorithm"
    rb"|_type|_mode|method|format|enabled|file|path|_field|_label|placeholder|_param|_hash_|_encryption|name\b|_?names?$)"
)
#: A value that is no credential: already masked, a reference to one, a switch.
NOT_A_VALUE = re.compile(
    rb"[\"']?(?:\*{3,}|x{6,}|X{6,}|\[[A-Z][A-Z -]{1,30}\]|\$\{[A-Za-z_][A-Za-z0-9_.:-]{0,64}\}"
    rb"|%[A-Za-z_][A-Za-z0-9_]{0,64}%|\{\{[^{}]{1,128}\}\}|<[a-z_-]{1,32}>"
    rb"|(?i:true|false|yes|no|on|off|none|null|nil|undefined|required|optional|disabled|enabled|strict"
    rb"|password|passwd|ConvertTo-SecureString|Read-Host|Get-Credential)|[|>][-+]?|\?|(?:file|env|fd):[^ \t\r\n]{1,512})[\"']?[;,.)\]}]{0,4}"
)

# -- tools' command lines ----------------------------------------------------------------------------------------

_MYSQL = rb"mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mysqlshow|mysqlpump|mysqlsh|mysqlbinlog|mariadb|mariadb-dump|mariadb-admin|mariadb-import|mariadb-check"
_LOGIN = rb"(?:docker|podman|nerdctl|buildah|skopeo|crane|oras|helm[ \t]+registry)[ \t]+login"
_LDAP = rb"ldapsearch|ldapmodify|ldapadd|ldapdelete|ldappasswd|ldapwhoami|ldapcompare|ldapmodrdn|ldapexop"
_MONGO = rb"mongo|mongosh|mongodump|mongorestore|mongoexport|mongoimport|mongostat|mongotop"

#: Flags whose value is a credential, as data: ``(flags, the tools that read them so (None: any tool), how the value
#: follows the flag: "glued" (``-pPW``), "spaced" (``-p PW``, ``-p=PW``) or "both")``. A flag's tool is looked for in
#: the same command, before the flag (``mysql -h db -uroot -pPW``; ``ssh -p 22`` is a port). Every flag here is a
#: trigger the search stops at: single letters that are common in ``ps`` output for other meanings (``-X`` of java,
#: ``-k`` and ``-w`` of curl, ``-P`` a port) are left out until tools are found by name instead (the benchmark's
#: ``sparse`` corpus showed ``-X`` alone costing 10x).
FLAG_TOOLS: tuple[tuple[tuple[bytes, ...], bytes | None, str], ...] = (
    ((b"-p",), _MYSQL, "glued"),  # mysql -p alone asks; -p mydb is a database
    ((b"-p",), rb"sshpass|" + _LOGIN + rb"|" + _MONGO + rb"|jeusadmin|psexec|psexec64|add-user\.sh|add-user\.bat|jboss-cli\.sh", "both"),
    ((b"-p", b"-p:"), rb"winrs", "glued"),
    ((b"/rp",), rb"schtasks", "spaced"),
    ((b"--auth",), rb"http|https|httpie", "spaced"),
    ((b"-p",), rb"7z|7za|7zr|7z\.exe", "glued"),
    ((b"-a",), rb"redis-cli|keydb-cli|valkey-cli", "spaced"),
    ((b"--cookie",), rb"curl|curl\.exe", "spaced"),
    ((b"-password", b"-pass"), rb"influx|openssl|pkcs12|jarsigner", "spaced"),
    (
        (
            b"-storepass", b"-keypass", b"-srcstorepass", b"-deststorepass", b"-srckeypass", b"-destkeypass",
            b"-passin", b"-passout", b"--passphrase", b"-passphrase", b"--storepass", b"--keypass",
        ),
        None,
        "spaced",
    ),
)  # fmt: skip


def _alternatives(flags: set[bytes]) -> bytes:
    return b"|".join(re.escape(f) for f in sorted(flags, key=lambda f: (-len(f), f)))


#: Flags a value may be glued to (``-pPW``): only these are followed by a value with no separator. Every other
#: flag needs a space, ``=`` or ``:`` first; a glued alternative for a common letter costs the search dearly
#: (``-a`` glued alone tripled the scan of the benchmark's ip-dense corpus). The separated form comes first, so
#: that ``-passin pass:x`` is not read as ``-p`` glued to ``assin``.
_GLUED = {flag for flags, _, how in FLAG_TOOLS if how != "spaced" for flag in flags}
_ALL_FLAGS = {flag for flags, _, _ in FLAG_TOOLS for flag in flags}
_FLAG_AND_SEPARATOR = (
    rb"(?:" + _alternatives(_ALL_FLAGS) + rb")(?:[ \t]{1,8}|=|:)|(?:" + _alternatives(_GLUED) + rb")"
)
#: A flag of :data:`FLAG_TOOLS` and its value (one byte of left context: RE2 has no look-behind).
TOOL_FLAG = re.compile(rb"(?:(?m:^)|[ \t\"'=(])(" + _FLAG_AND_SEPARATOR + rb")(" + VALUE + rb")")
TOOL_FLAG_DETAIL = re.compile(rb"(" + _FLAG_AND_SEPARATOR + rb")(" + VALUE + rb")")
#: Where a command starts, looking back from a flag: a line feed, a pipe, ``;``, ``&&``, ``$(`` or a backquote.
COMMAND_START = re.compile(rb"[\n|;&`]|\$\(")


def tool_pattern(tools: bytes) -> re.Pattern[bytes]:
    """A tool's name as a word of a command (``/usr/bin/mysql``, ``mysql.exe``, ``"C:\\...\\mysql.exe"``)."""
    return re.compile(rb"(?:^|[ \t/\\\"'=>])(?:" + tools + rb")(?:\.exe)?(?:[ \t\"']|$)")


#: Each flag of :data:`FLAG_TOOLS` -> ``[(its tools' pattern or None, how its value follows)]``.
FLAG_SPECS: dict[bytes, list[tuple[re.Pattern[bytes] | None, str]]] = {}
for _flags, _tools, _how in FLAG_TOOLS:
    for _flag in _flags:
        FLAG_SPECS.setdefault(_flag, []).append((None if _tools is None else tool_pattern(_tools), _how))

#: ``user%password`` (smbclient, rpcclient) and ``user,password`` (lftp) after a user flag.
USER_PASS_FLAG = re.compile(
    rb"(?:(?m:^)|[ \t\"'=(])((?:-U|--user|--username|-u)(?:[ \t]{1,8}|=)[\"']?[^%, \t\r\n\"']{1,256}[%,])("
    + VALUE
    + rb")"
)
USER_PASS_DETAIL = re.compile(
    rb"((?:-U|--user|--username|-u)(?:[ \t]{1,8}|=)[\"']?[^%, \t\r\n\"']{1,256}[%,])(" + VALUE + rb")"
)
USER_PASS_TOOLS = {
    b"%": tool_pattern(rb"smbclient|rpcclient|smbmap|smbcacls|net|mount\.cifs|winexe|wmic"),
    b",": tool_pattern(rb"lftp"),
}

#: Oracle and Tibero logons: ``sqlplus user/password@db``, ``tbsql user/password``, ``userid=user/password``.
ORACLE_LOGON = re.compile(
    rb"((?:(?i:\b(?:sqlplus|tbsql|expdp|impdp|exp|imp|sqlldr|rman|dgmgrl|tbexport|tbimport|tbloader|conn|connect)"
    rb"(?:\.exe)?)(?:[ \t]{1,8}-[A-Za-z]{1,12}|[ \t]{1,8}(?i:target|catalog|auxiliary)){0,4}[ \t]{1,8}"
    rb"|(?i:\buserid)[ \t]{0,8}=[ \t]{0,8})\\?[\"']?"
    rb"[A-Za-z0-9_$#.\\]{1,128}/)([^@/ \t\r\n\"']{1,%d})" % V
)
#: ``net use \\server\share PASSWORD /user:name`` and ``net use \\server\share /user:name PASSWORD``.
NET_USE = re.compile(
    rb"((?i:\bnet[ \t]{1,8}user)[ \t]{1,8}[^/ \t\r\n][^ \t\r\n]{0,256}[ \t]{1,8}"
    rb"|(?i:\bnet[ \t]{1,8}use)(?:[ \t]{1,8}(?:[A-Za-z]:|\*))?[ \t]{1,8}\\\\[^ \t\r\n]{1,256}"
    rb"(?:[ \t]{1,8}/(?i:u|user):[^ \t\r\n]{1,256})?[ \t]{1,8})([^/* \t\r\n\"'][^ \t\r\n]{0,%d}|"
    % V
    + QUOTED
    + rb")"
)
#: ``htpasswd -b[c] FILE USER PASSWORD`` (the password is the third word after the flags).
HTPASSWD = re.compile(
    rb"(\bhtpasswd(?:\.exe)?(?:[ \t]{1,8}-[A-Za-z]{1,8}){1,4}(?:[ \t]{1,8}[^- \t\r\n][^ \t\r\n]{0,256}){2}[ \t]{1,8})"
    rb"(" + VALUE + rb")"
)
#: ``rabbitmqctl add_user USER PASSWORD``, ``change_password USER PASSWORD``.
RABBITMQ_USER = re.compile(
    rb"(\brabbitmqctl(?:\.bat)?[ \t]{1,8}(?:add_user|change_password)[ \t]{1,8}[^ \t\r\n]{1,256}[ \t]{1,8})("
    + VALUE
    + rb")"
)
#: ``echo PASSWORD | sudo -S``, ``| passwd --stdin``, ``| chpasswd``, ``| docker login --password-stdin``, ...
ECHO_PIPE = re.compile(
    rb"(\becho(?:[ \t]{1,8}-[neE]{1,3})?[ \t]{1,8})("
    + VALUE
    + rb")([ \t]{0,8}\|[ \t]{0,8}(?:sudo[^|\r\n]{0,40}[ \t]-[A-Za-z]{0,4}S"
    rb"|passwd[^|\r\n]{0,40}--stdin|chpasswd|kinit|smbpasswd|cryptsetup|[^|\r\n]{0,80}--password-stdin))"
)
#: ``tool user:password@host`` without a scheme (sftp, lftp, scp, rsync, git): the password.
USERINFO = re.compile(
    rb"((?i:\b(?:sftp|ftp|lftp|scp|rsync|git|svn|hg|open|smbclient|mount|mysqlsh|mongosh|http|https|httpie))(?:\.exe)?[ \t]{1,8}(?:-[^ \t\r\n]{1,64}[ \t]{1,8}){0,6}"
    rb"[\"']?[A-Za-z0-9._%%+-]{1,128}:)([^@/ \t\r\n\"']{1,%d})@" % V
)

# -- SQL ---------------------------------------------------------------------------------------------------------

#: ``PASSWORD 'x'`` (CREATE/ALTER USER/ROLE, PostgreSQL's ``ENCRYPTED PASSWORD``), ``PASSWORD('x')`` (MySQL).
SQL_PASSWORD = re.compile(rb"((?i:\bpassword)(?:[ \t]{1,8}|[ \t]{0,8}\([ \t]{0,8}))(" + QUOTED + rb")")
#: ``SET PASSWORD [FOR 'u'@'h'] = 'x'`` (MySQL, MariaDB).
SET_PASSWORD = re.compile(
    rb"((?i:\bset[ \t]{1,8}password\b)[^=\r\n]{0,300}=[ \t]{0,8}(?:(?i:password)[ \t]{0,8}\([ \t]{0,8})?)("
    + QUOTED
    + rb")"
)

# -- credential files --------------------------------------------------------------------------------------------

#: A ``.pgpass`` line, ``host:port:database:user:password``: the password, to the end of the line.
PGPASS = re.compile(
    rb"((?m:^)[^:\s]{1,255}:(?:[0-9]{1,5}|\*):[^:\s]{1,255}:[^:\s]{1,255}:)((?:[^:\\\r\n]|\\[^\r\n]){1,%d})(?m:$)"
    % V
)
#: ``.netrc``: ``machine h login u password p`` (also over several lines; the machine or login confirms it).
NETRC = re.compile(rb"(\bpassword[ \t]{1,8})(" + VALUE + rb")")
NETRC_CONTEXT = re.compile(rb"(?:^|\s)(?:machine|login|default)\s")
#: Password hashes: crypt(3) (``/etc/shadow``, htpasswd: MD5, bcrypt, SHA-crypt, yescrypt), LDAP ``{SSHA}``,
#: PostgreSQL SCRAM and md5, MySQL's native ``*`` + 40 hex.
PASSWORD_HASH = (
    rb"\$(?:1|2[abxy]?|5|6|y|gy|7|sha1|apr1|md5|argon2(?:id|i|d))\$[./A-Za-z0-9$=,+-]{8,%d}"
    rb"|\{(?:SSHA|SSHA256|SSHA512|SHA|SHA256|SHA512|SMD5|CRYPT|PBKDF2(?:-SHA[0-9]{1,3})?)\}[A-Za-z0-9+/=.$]{8,%d}"
    rb"|\bSCRAM-SHA-256\$[0-9]{1,8}:[A-Za-z0-9+/=]{1,64}\$[A-Za-z0-9+/=:]{8,%d}"
    rb"|\bmd5[0-9a-f]{32}\b|\*[0-9A-F]{40}\b" % (V, V, V)
)
#: ``requirepass x`` / ``masterauth x`` (redis.conf: a space, no ``=``).
REDIS_CONF = re.compile(
    rb"((?:(?m:^)[ \t]{0,8}|(?i:config[ \t]{1,8}set)[ \t]{1,8})(?i:requirepass|masterauth|masteruser-password"
    rb"|sentinel[ \t]{1,8}auth-pass[ \t]{1,8}[^ \t\r\n]{1,128})[ \t]{1,8})(" + VALUE + rb")"
)
#: redis MONITOR and slowlog: ``"AUTH" "password"``, ``"auth" "user" "password"``.
REDIS_AUTH = re.compile(rb"(\"(?i:auth)\"[ \t]{1,8}(?:\"[^\"\r\n]{1,128}\"[ \t]{1,8})?)(" + QUOTED + rb")")
#: PowerShell: ``ConvertTo-SecureString 'x' -AsPlainText``.
PLAIN_SECURE_STRING = re.compile(rb"()(" + QUOTED + rb")([ \t]{1,8}-(?i:AsPlainText))")
#: ``openssl passwd [-6] [-salt s] 'x'``.
OPENSSL_PASSWD = re.compile(
    rb"(\bopenssl[ \t]{1,8}passwd(?:[ \t]{1,8}-(?:salt[ \t]{1,8}[^ \t\r\n]{1,64}|[A-Za-z0-9]{1,8})){0,4}[ \t]{1,8})("
    + VALUE
    + rb")"
)
#: ``reg query`` output: a value named like a credential (``DefaultPassword    REG_SZ    x``).
REG_VALUE = re.compile(
    rb"((?m:^)[ \t]{0,8}([A-Za-z0-9_.-]{1,64})[ \t]{1,8}REG_(?:SZ|EXPAND_SZ|MULTI_SZ)[ \t]{1,8})([^\r\n]{1,%d})"
    % V
)
#: MySQL's first start: ``A temporary password is generated for root@localhost: x``.
TEMPORARY_PASSWORD = re.compile(
    rb"((?i:temporary password is generated for)[ \t]{1,8}[^ \t\r\n]{1,128}:[ \t]{1,8})([^ \t\r\n]{1,%d})" % V
)
#: A base64-encoded private key (Kubernetes secrets, kubeconfig ``client-key-data``): ``LS0tLS1CRUdJTi…``.
PEM_BASE64 = rb"\bLS0tLS1CRUdJTi[A-Za-z0-9+/]{8,%d}={0,2}" % V
#: A Netscape cookie-jar line (curl -c, wget): domain, flag, path, secure, expiry, name, then the value.
COOKIE_JAR = re.compile(
    rb"((?m:^)(?:#HttpOnly_)?[A-Za-z0-9.-]{1,253}\t(?:TRUE|FALSE)\t[^\t\r\n]{1,1024}\t(?:TRUE|FALSE)\t[0-9]{1,20}\t"
    rb"[^\t\r\n]{1,256}\t)([^\r\n]{1,%d})" % V
)

# -- structured config: a value whose name is in another field ---------------------------------------------------

#: The value field of a name/value pair: JSON ``"value": …``, XML ``value="…"`` / ``<value>…``, YAML ``value: …``.
NAME_VALUE = re.compile(
    rb"((?:[\"'](?i:value)[\"'][ \t]{0,8}[:=][ \t]{0,8}|\b(?i:value)[ \t]{0,8}=[ \t]{0,8}|<(?i:value)>"
    rb"|(?m:^)[ \t]{0,32}(?:-[ \t]{1,8})?value[ \t]{0,8}:[ \t]{0,8}))(" + VALUE + rb")"
)
#: The name field of the same record, looked for before the value (the last one wins).
NAME_FIELD = re.compile(
    rb"[\"'](?i:name|key)[\"'][ \t]*[:=][ \t]*[\"']([^\"'\r\n]{1,128})[\"']"
    rb"|\b(?i:name|key)[ \t]*=[ \t]*[\"']([^\"'\r\n]{1,128})[\"']"
    rb"|<(?i:name|key)>([^<\r\n]{1,128})</"
    rb"|(?m:^)[ \t]*(?:-[ \t]+)?name[ \t]*:[ \t]*[\"']?([^\"'\r\n]{1,128})"
    rb"|[\"']([^\"'\r\n]{1,128})[\"'][ \t]*:[ \t]*\{"
    rb"|<([A-Za-z][A-Za-z0-9_:.-]{0,64})>"
)
#: ``<entry key="password">VALUE</entry>``, ``<param name="db.password">VALUE</param>``: the element's text.
XML_KEYED = re.compile(
    rb"(<[A-Za-z][A-Za-z0-9:_-]{0,32}[ \t][^>\r\n]{0,200}?\b(?i:key|name)[ \t]{0,4}=[ \t]{0,4}[\"'])([^\"'\r\n]{1,128})"
    rb"([\"'][^>\r\n]{0,100}>)([^<\r\n]{1,%d})(</)" % V
)
#: A line that is one indented word: a YAML value on the line after its key (``password:`` then ``  PW``).
NEXT_LINE_VALUE = re.compile(rb"((?m:^)[ \t]{1,32})([\"']?[^ \t\r\n#:\"'-][^ \t\r\n]{0,%d})(?m:$)" % V)
#: The line before it ends with a credential key and nothing after the colon (or a block scalar's ``|``/``>``).
KEY_ENDS_LINE = re.compile(rb"([A-Za-z0-9_.-]{1,64})[\"']?[ \t]*:[ \t]*(?:[|>][-+]?[ \t]*)?\r?$")

# -- key material without its BEGIN line -------------------------------------------------------------------------

#: A line of base64 only: a key's (or a certificate's) body, 64 (PEM), 70 (OpenSSH) or 76 (MIME) wide, or the
#: short last line of one.
KEY_BODY_LINE = re.compile(rb"(?m:^)[A-Za-z0-9+/]{16,76}={0,2}\r?(?m:$)")
KEY_BODY_WIDTHS = frozenset({64, 70, 76})
