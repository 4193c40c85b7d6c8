"""Secret-bearing command lines and environments, and look-alikes that must
stay intact: the redaction corpus (docs/redaction.md), run against the
redactor alone (tests/policy/test_redact.py), the live kernel path and the /proc
seed path (tests/policy/test_redaction_corpus.py).

Each secret case is (argv, env, secrets): no substring in `secrets` may
arrive anywhere in a record. Each look-alike is (argv, env): both arrive
unchanged. The credentials are shaped like real ones and valid nowhere.
"""
from __future__ import annotations

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GHP = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
GH_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"
GLPAT = "glpat-x7Yz9AbCdEfGhIjKlMnO"
SLACK = "xoxb-2837261-99182736451-Zk3mQ8xY7wV6uT5sR4qP3oN2"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
       "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM_BODY = "MIIEowIBAAKCAQEA7bq5Zk2Qx3vH8sVd9Lr0n4TQyOeWmP1uZ"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
STRIPE = "sk_live_51H8xKjLmNoPqRsTuVwXyZ0123"
GOOGLE = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
NPM = "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS = "sv=2021-06-08&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=Zk3mQ8xY7wV6uT5sR4qP3oN2lM1kJ0%3D"
BASIC = "dXNlcjpTM2NyM3RQYXNzIQ=="  # user:S3cr3tPass!

# (argv, env, secrets that must not arrive)
SECRET_CASES: list[tuple[list[str], dict[str, str], list[str]]] = [
    # program-aware options
    (["mysql", "-uroot", "-pMyS3cretPw", "shop"], {}, ["MyS3cretPw"]),
    (["mysql", "-u", "root", "-p", "MyS3cretPw2", "shop"], {}, ["MyS3cretPw2"]),
    (["mariadb", "--user=app", "-pMariaPw77", "-h", "db"], {}, ["MariaPw77"]),
    (["mysqldump", "-uapp", "-pDumpPw91", "--all-databases"], {}, ["DumpPw91"]),
    (["mysqladmin", "-uroot", "-pAdmPw55", "status"], {}, ["AdmPw55"]),
    (["sshpass", "-p", "SshP4ss!", "ssh", "-p", "22", "deploy@host"], {}, ["SshP4ss!"]),
    (["sshpass", "-pSshAttached9", "scp", "a", "b:"], {}, ["SshAttached9"]),
    (["redis-cli", "-a", "R3disPw", "-h", "cache", "ping"], {}, ["R3disPw"]),
    (["redis-cli", "-h", "cache", "AUTH", "RedisAuthPw8"], {}, ["RedisAuthPw8"]),
    (["redis-cli", "CONFIG", "SET", "requirepass", "NewRedisPw3"], {}, ["NewRedisPw3"]),
    (["curl", "-u", "admin:CurlPw12", "https://api.example.com"], {}, ["CurlPw12"]),
    (["curl", "--user", "bob:CurlPw34", "https://api.example.com"], {}, ["CurlPw34"]),
    (["curl", "-ualice:CurlPw56", "https://api.example.com"], {}, ["CurlPw56"]),
    (["curl", "-U", "proxy:ProxyPw78", "-x", "http://proxy:3128", "https://e.com"], {}, ["ProxyPw78"]),
    (["docker", "login", "-u", "me", "-p", "DockerPw90", "registry.example.com"], {}, ["DockerPw90"]),
    (["podman", "login", "--username", "me", "--password", "PodmanPw11", "quay.io"], {}, ["PodmanPw11"]),
    (["docker", "login", "-u", "me", "-p", "-LeadingDashPw", "r.io"], {}, ["LeadingDashPw"]),
    (["htpasswd", "-b", "/etc/nginx/.htpasswd", "admin", "HtPw2024"], {}, ["HtPw2024"]),
    (["htpasswd", "-nbB", "admin", "HtPw2025"], {}, ["HtPw2025"]),
    (["smbclient", "//fs/share", "-U", "CORP\\jdoe%SmbPw777"], {}, ["SmbPw777"]),
    (["smbclient", "//fs/share", "-Ujdoe%SmbPw888"], {}, ["SmbPw888"]),
    (["aws", "configure", "set", "aws_secret_access_key", AWS_SECRET], {}, [AWS_SECRET]),
    (["aws", "configure", "set", "aws_session_token", "FwoGZXIvYXdzEJr//////////wEaDO"], {}, ["FwoGZXIvYXdzEJr"]),
    (["git", "-c", f"http.extraheader=AUTHORIZATION: basic {BASIC}", "clone", "https://h/r"], {}, [BASIC]),
    (["git", "-c", "http.https://h/.extraHeader=Authorization: Bearer GitHdrTok123", "fetch"], {},
     ["GitHdrTok123"]),
    (["mongosh", "--username", "adm", "-p", "MongoPw42", "--authenticationDatabase", "admin"], {}, ["MongoPw42"]),
    (["mongodump", "-u", "adm", "-p", "MongoPw43", "--db", "x"], {}, ["MongoPw43"]),
    (["ldapsearch", "-x", "-D", "cn=admin,dc=ex", "-w", "LdapPw61", "-b", "dc=ex"], {}, ["LdapPw61"]),
    (["sqlcmd", "-S", "db", "-U", "sa", "-P", "MssqlPw!9"], {}, ["MssqlPw!9"]),
    (["openssl", "pkcs12", "-export", "-passout", "pass:P12Pw33", "-in", "c.pem"], {}, ["P12Pw33"]),
    (["openssl", "passwd", "-6", "OpensslPw21"], {}, ["OpensslPw21"]),
    (["keytool", "-importcert", "-keystore", "ks.jks", "-storepass", "StorePw44"], {}, ["StorePw44"]),
    (["zip", "-P", "ZipPw555", "out.zip", "a.txt"], {}, ["ZipPw555"]),
    (["7z", "a", "-pSevenZPw66", "out.7z", "dir"], {}, ["SevenZPw66"]),
    (["ipmitool", "-I", "lanplus", "-H", "bmc", "-U", "admin", "-P", "IpmiPw77", "power", "status"], {},
     ["IpmiPw77"]),
    (["snmpwalk", "-v3", "-u", "mon", "-A", "SnmpAuth88", "-X", "SnmpPriv99", "host"], {},
     ["SnmpAuth88", "SnmpPriv99"]),
    (["useradd", "-m", "-p", "$6$saltsalt$HashedPwValue", "bob"], {}, ["HashedPwValue"]),
    (["sqlplus", "scott/TigerPw1@orcl"], {}, ["TigerPw1"]),
    (["vault", "login", "hvs.CAESIJ0aVaultTok3n"], {}, ["hvs.CAESIJ0aVaultTok3n"]),
    (["nmcli", "dev", "wifi", "connect", "HomeNet", "password", "WifiPw2468"], {}, ["WifiPw2468"]),
    (["lftp", "-u", "ftpuser,FtpPw135", "ftp.example.com"], {}, ["FtpPw135"]),
    (["xfreerdp", "/v:host", "/u:admin", "/p:RdpPw246"], {}, ["RdpPw246"]),
    # wrappers and command lines in one argument
    (["sudo", "-u", "mysql", "mysql", "-uroot", "-pSudoMyPw1"], {}, ["SudoMyPw1"]),
    (["env", "LANG=C", "redis-cli", "-a", "EnvRedisPw2"], {}, ["EnvRedisPw2"]),
    (["docker", "exec", "db", "mysql", "-uroot", "-pExecMyPw3"], {}, ["ExecMyPw3"]),
    (["sh", "-c", "mysql -uroot -pShellMyPw4 shop < dump.sql"], {}, ["ShellMyPw4"]),
    (["bash", "-c", "sshpass -p ShellSshPw5 ssh -p 2222 host uptime"], {}, ["ShellSshPw5"]),
    # generic flags, whatever the value starts with
    (["tool", "--password", "-StartsWithDash"], {}, ["StartsWithDash"]),
    (["deploy", "--private-key", PEM], {}, [PEM_BODY]),
    (["gh", "--token", GHP, "repo", "list"], {}, [GHP]),
    (["app", "--api-key=ApiKeyValue12345"], {}, ["ApiKeyValue12345"]),
    (["app", "--db-pass", "DbPassFlag9"], {}, ["DbPassFlag9"]),
    (["app", "--client-secret", "ClientSecretX1"], {}, ["ClientSecretX1"]),
    (["wget", "--http-password=WgetPw11", "https://e.com/f"], {}, ["WgetPw11"]),
    (["influx", "-password", "InfluxPw22"], {}, ["InfluxPw22"]),
    # values anywhere in argv
    (["psql", "postgresql://app:Pg/Pw?x#y@db:5432/app"], {}, ["Pg/Pw?x#y"]),
    (["git", "clone", f"https://{GHP}@github.com/o/r.git"], {}, [GHP]),
    (["curl", "-H", f"Authorization: Bearer {JWT}", "https://api"], {}, [JWT, JWT.split(".")[2]]),
    (["curl", "-H", "X-Api-Key: HdrApiKey42", "https://api"], {}, ["HdrApiKey42"]),
    (["curl", "-d", '{"username":"u","password":"JsonPw99"}', "https://api/login"], {}, ["JsonPw99"]),
    (["curl", f"https://acct.blob.core.windows.net/c/b?{SAS}"], {}, ["Zk3mQ8xY7wV6uT5sR4qP3oN2lM1kJ0"]),
    (["java", "-Dspring.datasource.password=SpringPw7", "-jar", "app.jar"], {}, ["SpringPw7"]),
    (["kubectl", "create", "secret", "generic", "s", "--from-literal=password=KubePw8"], {}, ["KubePw8"]),
    (["helm", "install", "x", "--set", "db.password=HelmPw9,db.user=app"], {}, ["HelmPw9"]),
    (["echo", SLACK], {}, [SLACK]),
    (["echo", STRIPE], {}, [STRIPE]),
    (["echo", GOOGLE], {}, [GOOGLE]),
    (["echo", JWT], {}, [JWT]),
    (["echo", GLPAT, GH_PAT, NPM], {}, [GLPAT, GH_PAT, NPM]),
    (["aws", "s3", "ls", "--profile", "x", AWS_ID], {}, [AWS_ID]),
    (["mount", "-t", "cifs", "//fs/s", "/mnt", "-o", "username=u,password=CifsPw3"], {}, ["CifsPw3"]),
    # environments
    ([], {"DATABASE_URL": "postgres://app:EnvDbPw1@db/app"}, ["EnvDbPw1"]),
    ([], {"DATABASE_URL": "mysql://app:My/Sql?Pw#2@db/app"}, ["My/Sql?Pw#2"]),
    ([], {"MONGO_URL": "mongodb+srv://adm:MongoEnvPw3@c0.mongodb.net/db?retryWrites=true"}, ["MongoEnvPw3"]),
    ([], {"REDIS_URL": "redis://:RedisEnvPw4@cache:6379/0"}, ["RedisEnvPw4"]),
    ([], {"DB_CONN": "Server=tcp:db,1433;Database=app;User ID=sa;Password=MssqlEnvPw5;Encrypt=true"},
     ["MssqlEnvPw5"]),
    ([], {"ODBC": "Driver={ODBC};Server=db;Uid=sa;Pwd=OdbcPw6;"}, ["OdbcPw6"]),
    ([], {"STORAGE": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZ_KEY};EndpointSuffix=x"},
     [AZ_KEY[:40]]),
    ([], {"SB": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=SbKey7x=="},
     ["SbKey7x=="]),
    ([], {"SAS_URL": f"https://acct.blob.core.windows.net/c?{SAS}"}, ["Zk3mQ8xY7wV6uT5sR4qP3oN2lM1kJ0"]),
    ([], {"APP_DB": "postgres://h/db?user=u&password=QueryPw8&sslmode=require"}, ["QueryPw8"]),
    ([], {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer OtlpTok9abcdef"}, ["OtlpTok9abcdef"]),
    ([], {"EXTRA_HEADERS": "Authorization: Basic " + BASIC}, [BASIC]),
    ([], {"CI_JOB_JWT": JWT}, [JWT]),
    ([], {"SOME_BLOB": JWT}, [JWT]),
    ([], {"TLS_MATERIAL": PEM}, [PEM_BODY]),
    ([], {"APP_CONFIG": '{"db": {"host": "h", "password": "JsonEnvPw10"}}'}, ["JsonEnvPw10"]),
    ([], {"MASTERKEY": "MasterKeyValue11"}, ["MasterKeyValue11"]),
    ([], {"SSH_PRIVKEY": "PrivKeyValue12"}, ["PrivKeyValue12"]),
    ([], {"GH_PAT": "GhPatValue13"}, ["GhPatValue13"]),
    ([], {"SMTP_PASS": "SmtpPassValue14"}, ["SmtpPassValue14"]),
    ([], {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_ACCESS_KEY_ID": AWS_ID}, [AWS_SECRET, AWS_ID]),
    ([], {"GITHUB_TOKEN": GHP, "SLACK_BOT": SLACK}, [GHP, SLACK]),
    ([], {"NOTES": f"deploy with {STRIPE} today"}, [STRIPE]),
    ([], {"PGPASSWORD": "PgEnvPw15", "MYSQL_PWD": "MyEnvPw16", "SSHPASS": "SshEnvPw17"},
     ["PgEnvPw15", "MyEnvPw16", "SshEnvPw17"]),
    ([], {"BAGGAGE": "userId=7,session=BaggageSess18"}, ["BaggageSess18"]),
    ([], {"TRACESTATE": "vendor=https://u:TraceStatePw19@h"}, ["TraceStatePw19"]),
]

# (argv, env) that must arrive unchanged
LOOKALIKES: list[tuple[list[str], dict[str, str]]] = [
    (["mkdir", "-p", "/tmp/build/out"], {}),
    (["ls", "-p", "/etc"], {}),
    (["ssh", "-p", "22", "deploy@host", "uptime"], {}),
    (["scp", "-P", "2222", "a.txt", "host:/tmp/"], {}),
    (["docker", "run", "-p", "8080:80", "-e", "LANG=C", "nginx"], {}),
    (["podman", "run", "-p", "443:443", "img"], {}),
    (["mkdir", "-pv", "a/b/c"], {}),
    (["cp", "-p", "src", "dst"], {}),
    (["rsync", "-avP", "src/", "host:dst/"], {}),
    (["patch", "-p1", "-i", "fix.diff"], {}),
    (["git", "commit", "-m", "Basic configuration for the password reset page"], {}),
    (["git", "log", "--author=someone", "--format=%an"], {}),
    (["git", "clone", "git@github.com:org/repo.git"], {}),
    (["npm", "install", "@scope/pkg"], {}),
    (["curl", "https://host/path/@scope/pkg"], {}),
    (["curl", "http://localhost:8080/api/v1/items@latest"], {}),
    (["curl", "-H", "Accept: application/json", "https://api.example.com"], {}),
    (["python3", "-m", "http.server", "8000"], {}),
    (["grep", "-r", "password", "docs/"], {}),
    (["keyboard-config", "--layout", "us"], {}),
    (["xkbcomp", "-xkb", "keymap.xkb"], {}),
    (["tar", "-czpf", "backup.tgz", "/srv"], {}),
    (["ps", "-p", "1234", "-o", "pid,comm"], {}),
    (["pgrep", "-P", "1", "sshd"], {}),
    (["mysql", "-h", "db", "-P", "3306", "-u", "app", "-e", "select 1"], {}),
    (["redis-cli", "-h", "cache", "-p", "6379", "ping"], {}),
    (["openssl", "s_client", "-connect", "host:443"], {}),
    (["echo", "a passage about keyboards and bypass valves"], {}),
    (["ssh-keygen", "-t", "ed25519", "-f", "/tmp/k"], {}),
    (["mail", "-s", "report", "someone@example.com"], {}),
    ([], {"KEYBOARD": "us", "PASSAGE": "north", "XKB_KEYMAP": "us"}),
    ([], {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/dev"}),
    ([], {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com"}),
    ([], {"BYPASS_CACHE": "1", "PASSTHROUGH": "yes", "COMPASS_DIR": "/opt/compass"}),
    ([], {"PATCH_LEVEL": "3", "SPATIAL_INDEX": "on"}),
    ([], {"LS_COLORS": "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33"}),
    ([], {"HOMEPAGE": "https://example.com/docs?page=2#intro"}),
    ([], {"NPM_REGISTRY": "https://registry.npmjs.org/@scope/pkg"}),
    ([], {"SSH_CONNECTION": "10.0.0.1 50000 10.0.0.2 22", "MAIL": "/var/mail/dev"}),
    ([], {"JAVA_OPTS": "-Xmx2g -Dfile.encoding=UTF-8", "CFLAGS": "-O2 -g -pipe"}),
    ([], {"GREETING": "Basic setup done", "MOTD": "token based login is disabled"}),
    ([], {"APP_CONFIG": '{"db": {"host": "h", "port": 5432}}'}),
    ([], {"SERVER_URL": "http://localhost:8080/path@v2"}),
    ([], {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "TRACESTATE": "rojo=00f067aa0ba902b7"}),
]
